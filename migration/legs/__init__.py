"""The router's legs: one class per place a task message can live, all behind :class:`Leg`."""
