"""Chaos: seeded fault schedules against a live three-broker lattice, judged by an independent checker."""
