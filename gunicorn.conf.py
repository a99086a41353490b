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
# Seconds an idle keep-alive connection stays open. A load balancer reuses its connections to the
# portal and must be the side that closes them: if the portal closed first (gunicorn's default is
# 2 s; an ALB keeps idle connections 60 s), a request sent at that moment is reset and its caller
# gets a 502. So: longer than the load balancer's idle timeout. gthread workers keep idle
# connections in their poller, not in a thread. Behind a longer idle timeout: --keep-alive N.
keepalive = 75
# With --access-logfile: one line a request with its request id, and no query string (OIDC
# callbacks carry the authorization code there).
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms %({x-request-id}o)s'
