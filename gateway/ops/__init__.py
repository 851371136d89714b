"""What an operator sees and does: metrics, logs, the status of the deployment, draining."""
