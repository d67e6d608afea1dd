"""Route selection: which route of the config serves a request."""

from __future__ import annotations

from tierwise.routerconfig import MODEL_ALIAS_PREFIX, Route, RouterConfig


class RouteNotFound(LookupError):
    """No route matches; ``message`` is the text of the 404 ``not_found_error``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def select_route(config: RouterConfig, model: object, route_header: str | None) -> Route:
    """The route for a request, by precedence.

    1. the ``x-tierwise-route`` header names a route (an unknown name is a 404: the client
       asked for that route explicitly, so silently serving another would hide a typo);
    2. the request ``model`` is in a route's ``models`` (``tierwise/<route>`` aliases and
       mapped real model names); a ``tierwise/`` alias of no route is a 404 for the same
       reason (a typo must not land on the default route's tier);
    3. ``defaultRoute``;
    4. otherwise a 404 naming the model.
    """
    if route_header:
        route = config.routes_by_name.get(route_header.strip())
        if route is None:
            raise RouteNotFound(
                f"route {route_header!r} (from the x-tierwise-route header) does not exist; "
                f"known routes: {', '.join(sorted(config.routes_by_name))}"
            )
        return route
    if isinstance(model, str):
        route = config.routes_by_model.get(model)
        if route is not None:
            return route
        if model.startswith(MODEL_ALIAS_PREFIX):
            raise RouteNotFound(
                f"model: {model!r} names no route of policy {config.policy.label}; "
                f"known routes: {', '.join(sorted(config.routes_by_name))}"
            )
    if config.default_route is not None:
        return config.routes_by_name[config.default_route]
    raise RouteNotFound(
        f"model: {model!r} matches no route of policy {config.policy.label} and there is no "
        f"default route; use one of {', '.join(sorted(config.routes_by_model))}"
    )
