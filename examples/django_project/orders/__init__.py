"""Orders: a model, tasks that read it, and views that send them after the commit."""
