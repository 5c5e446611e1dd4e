"""The durable workflow engine: the SQL catalog installer, store, scheduler and executors."""
