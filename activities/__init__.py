"""Side effects, one module per external system; every action and diagnostic is an activity."""
