"""Classroom rooms: a teacher-led, shared version of the game (rules in state.py)."""
