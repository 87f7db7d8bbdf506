"""Information-flow routes and lenses, linked to decoding (they read the backend's parts, never a model).

After "Information Flow Routes: Automatically Interpreting Language Models at Scale" (Ferrando & Voita, 2024):

    from lab import interp
    f = interp.flow(lab, "The capital of France is")       # one forward: the parts of every residual update
    route = f.route(tau=0.04)                               # the route to the last prediction
    route.to_json(), route.to_networkx()
"""
from .flow import Flow, flow, flow_of
from .routes import TAU, Edge, Route, extract

__all__ = ["Flow", "flow", "flow_of", "Route", "Edge", "extract", "TAU"]
