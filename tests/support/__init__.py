"""What tests and benchmarks share: local Redis deployments started from the shipped binary."""
