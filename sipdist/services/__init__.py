"""
What a server does for a request once a role has decided to handle it: the
registrar, the stateful proxy, the routing of calls and messages, and
subscriptions with their notifier.
"""
