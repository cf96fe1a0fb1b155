"""What the server writes down, and how it is read back.

Owns: the prediction log's own columns (``layout``), personal data in it
(``privacy``), ground-truth outcomes (``outcomes``), the review queue
(``review_queue``) and failed requests (``failed_requests``).

May import: ``framework.errors``, ``framework.duck``.
"""
