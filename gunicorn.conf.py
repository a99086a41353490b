"""gunicorn's settings, read from the working directory by ``gunicorn portal.wsgi`` (README).

Threads (the gthread worker): a request may wait 70 s for its model (INVOKE_READ_TIMEOUT) or stream
an upload of up to 1 GB, and a sync worker is killed once one request has run ``timeout`` seconds
(30 by default): the caller got a 500 and the call no record. A gthread worker's timeout only
catches a worker that stops answering. Processes: ``WEB_CONCURRENCY`` (gunicorn's own variable) or
``--workers``; options on the command line override this file.
"""

worker_class = "gthread"
threads = 4
timeout = 90
# With --access-logfile: one line a request with its request id, and no query string (OIDC
# callbacks carry the authorization code there).
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms %({x-request-id}o)s'
