"""Model layer: paper-exact prompts, chat assembly, output parsing and model backends.

Imports `game`, never `app`.
"""
