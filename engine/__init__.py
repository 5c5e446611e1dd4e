"""The durable workflow engine: catalog migrations, store, scheduler and executors."""
