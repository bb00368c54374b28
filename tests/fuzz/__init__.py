"""Property-based fuzzing of what a worker reads off a queue (issue 19, fuzzed input)."""
