"""Step connections: the pool, the slots that cap it, runner roles, outages."""
