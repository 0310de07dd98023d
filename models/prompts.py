"""The paper-exact prompt texts now live next to the engines, in `game.prompts` (they are part of
what the environment shows the model). This module re-exports them for `models/` code and
callers that import `models.prompts`."""
from game.prompts import *  # noqa: F403
from game.prompts import __all__  # noqa: F401
