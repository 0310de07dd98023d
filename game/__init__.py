"""Pure game engines: GeneralPoints (`game.gp`) and V-IRL navigation (`game.virl`).

Owns rules, dealing, arithmetic, verification, solving, rendering and route data. Imports nothing
from `app` or `models`; everything is deterministic from an explicit seed.
"""
