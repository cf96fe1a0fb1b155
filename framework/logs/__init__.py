"""What the server writes down, and how it is read back.

Owns: the prediction log's layout, folders, file names and own columns
(``layout``), its rows as the server hands them over (``rows``) and its reader
(``reader``), personal data in it (``privacy``),
ground-truth outcomes (``outcomes``) and their join to the predictions they
judge (``outcome_join``), the review queue (``review_queue``) and failed
requests (``failed_requests``).

May import: ``framework.errors``, ``framework.duck``.
"""
