"""Read models: what the operator's CLI, the dashboard and the edge's metrics show, read from the
database and Redis (payments, selling, pixel events, the funnel report, queues). Nothing here
writes."""
