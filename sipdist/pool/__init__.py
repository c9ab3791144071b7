"""
The machinery that keeps the distribution right while the pool runs: the
monitor (health and load), rebalancing plans, and the status endpoint.
"""
