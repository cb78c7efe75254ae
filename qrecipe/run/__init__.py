"""Run one job: validate, claim the output directory, the staged pipeline, resume markers,
interrupts, resource checks, GPU leases and the job's dtype."""
