"""The worker: consumes messages, runs tasks in a pool, stores results, settles messages."""
