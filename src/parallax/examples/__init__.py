"""Examples that ship with Parallax, so `parallax demo` runs anywhere it is installed."""
