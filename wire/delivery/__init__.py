"""Partner delivery beyond sockets: webhooks signed the Standard Webhooks way.

``signing`` signs, ``urls`` keeps webhook targets out of the wire's own
network, ``registry`` keeps webhooks, cursors and leases in Redis, and
``deliverer`` POSTs every matching entry to each webhook, in stream order.
"""
