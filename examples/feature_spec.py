"""The five-views feature spec: `parallax run examples/feature_spec.py:plan` (needs a model:
set PARALLAX_MODEL, or use `build` with model="scripted:..." to run offline; `parallax demo`
does that for you). The plan itself lives in `parallax.examples.feature_spec.plan`."""

from parallax.examples.feature_spec.plan import build
from parallax.settings import Settings

plan = build(model=Settings.from_env().default_model()[0] or "test")
