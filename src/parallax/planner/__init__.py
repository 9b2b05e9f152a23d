"""The planner: a knowledge graph of a codebase, and decomposition of a goal into tasks."""
