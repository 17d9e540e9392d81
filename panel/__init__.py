"""The seller panel (CONTRACT §14): sellers log in and see their own shop; the operator sees every
account. Server-rendered pages (Jinja2, Portuguese), sessions in Redis, a CSRF token on every form."""
