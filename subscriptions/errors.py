"""The refusals and failures of the authorized proxy path, each with its HTTP status and code.

They are :class:`portal.errors.ServiceError` s, so the API answers them as ``{"detail", "code"}``
with the status below; the invocation record and the audit event keep the code.
"""

from __future__ import annotations

from portal.errors import NotPermitted, ServiceError


class SellerUnavailable(ServiceError):
    """The seller's token service (or its JWKS) did not answer usefully: down, 5xx or timeout."""

    status = 503
    code = "seller_unavailable"


class SellerError(ServiceError):
    """The seller's token service answered something the portal cannot use (bad gateway)."""

    status = 502
    code = "seller_error"


class TokenRejected(ServiceError):
    """The subscription token is missing, malformed, forged or expired (401)."""

    status = 401
    code = "token_invalid"


class TokenMismatch(NotPermitted):
    """A valid seller token, but for another subscription, product or account (403)."""

    code = "token_subscription_mismatch"


class PayloadTooLarge(ServiceError):
    """The request body is over SageMaker's real-time payload limit (413)."""

    status = 413
    code = "payload_too_large"


class UnsupportedContentType(ServiceError):
    """The listing does not accept this request content type (415)."""

    status = 415
    code = "unsupported_content_type"


class NotAcceptable(ServiceError):
    """The model cannot answer in the content type the caller's ``Accept`` asks for (406)."""

    status = 406
    code = "not_acceptable"


class InvocationThrottled(ServiceError):
    """SageMaker throttled the call; retry after ``retry_after`` seconds (429)."""

    status = 429
    code = "throttled"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ModelFailed(ServiceError):
    """The model container answered with an error; the message is the container's own (502).

    ``original_status`` is the container's own HTTP status when SageMaker reported it (a 4xx is
    the input's fault and will fail again; a 5xx may not), else None.
    """

    status = 502
    code = "model_error"

    def __init__(
        self, message: str, *, code: str | None = None, original_status: int | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.original_status = original_status


class EndpointUnavailable(ServiceError):
    """The endpoint does not exist, is not in service, or cannot be reached (503)."""

    status = 503
    code = "endpoint_unavailable"


class UpstreamTimeout(ServiceError):
    """The endpoint did not answer within the read timeout (504)."""

    status = 504
    code = "upstream_timeout"


class UpstreamFailure(ServiceError):
    """Any other AWS failure on the way (assuming the role, storing the result...) (502)."""

    status = 502
    code = "upstream_error"
