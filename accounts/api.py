"""REST endpoints about the signed-in principal."""

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView


class MembershipSerializer(serializers.Serializer):
    """A LOB the user belongs to and their role in it."""

    lob = serializers.CharField()
    role = serializers.CharField()


class MeSerializer(serializers.Serializer):
    """Who the caller is, as the portal knows them."""

    username = serializers.CharField()
    email = serializers.EmailField(allow_blank=True)
    name = serializers.CharField()
    is_platform_admin = serializers.BooleanField()
    memberships = MembershipSerializer(many=True)


class MeView(APIView):
    """``GET /api/v1/me/``: the authenticated principal and their LOB memberships."""

    @extend_schema(responses=MeSerializer, summary="The signed-in principal")
    def get(self, request: Request) -> Response:
        """Describe the caller."""
        user = request.user
        data = {
            "username": user.username,
            "email": user.email,
            "name": user.display_name,
            "is_platform_admin": user.is_platform_admin,
            # LOB memberships arrive with the LOB model; until then nobody has any.
            "memberships": [],
        }
        return Response(MeSerializer(data).data)
