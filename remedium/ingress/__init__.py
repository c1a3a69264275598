"""HTTP ingress: webhooks in, incident workflows started or signalled."""
