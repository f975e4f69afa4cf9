"""Operating the service: the command line, the operator commands, API-key files and the
stream worker."""
