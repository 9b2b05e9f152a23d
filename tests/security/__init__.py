"""Attacks on Parallax's own guarantees, each against the real thing (real bubblewrap as root,
real git, a real server on loopback, real YAML files, real subprocesses).

Threat model
------------
Trusted: the person who writes the pattern and holds the admin token. A pattern may run
commands and import code, so the admin token is equivalent to a shell on the machine that runs
the server; nothing here defends against its holder.

Not trusted:
- model output and agent output (a step's result is data: it is filled into later templates
  once, quoted once, and never parsed again as a template or as shell);
- everything in a task's worktree and HOME (files an agent wrote, a tracked `.gitconfig`, a
  rewritten `.git` file, planted hooks): host-side git reads none of it as configuration, and
  whatever a sandboxed task produced runs sandboxed;
- peers' files (a snapshot carries no secrets, links, special files or hard links);
- run-scoped token holders (their run only) and unauthenticated clients (nothing but /health;
  the token is checked before a body is read, and bodies are capped);
- YAML, JSON, TOML and command-line values from outside (bounded parsing, one located error,
  nothing written).

Each test here was checked to fail on the code before its fix.
"""
