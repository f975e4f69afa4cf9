"""What a service process does: decisions from cached snapshots, rewards, health and
history, the tuning advisor."""
