"""The dashboard (CONTRACT §13): a read-only page per bot and campaign, the queues and the workers."""
