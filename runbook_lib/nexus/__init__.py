"""Nexus Repository 3: REST client and the repository/security stages."""
