"""OpenAPI description of the portal's bearer authentication (loaded by AccountsConfig.ready)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class CognitoAccessTokenScheme(OpenApiAuthenticationExtension):
    """Documents ``Authorization: Bearer <Cognito access token>`` in the schema."""

    target_class = "accounts.api_auth.CognitoAccessTokenAuthentication"
    name = "cognitoAccessToken"

    def get_security_definition(self, auto_schema):
        """A bearer-JWT security scheme."""
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "An access token issued by the Cognito user pool to an allowed app client."
            ),
        }
