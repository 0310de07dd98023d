"""GeneralPoints (the 24-point card game of the paper): cards, dealing, arithmetic, verifier,
solver, episodes, card images and the Gymnasium environment."""
