"""Running one task request to one outcome: shared by every worker pool and by ``apply()``."""
