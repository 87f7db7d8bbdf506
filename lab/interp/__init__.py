"""Information-flow routes and lenses, linked to decoding (they read the backend's parts, never a model).

After "Information Flow Routes: Automatically Interpreting Language Models at Scale" (Ferrando & Voita, 2024):

    from lab import interp
    f = interp.flow(lab, "The capital of France is")       # one forward: the parts of every residual update
    route = f.route(tau=0.04)                               # the route to the last prediction
    route.to_json(), route.to_networkx()
    interp.logit_lens(lab, f), interp.head_effect(lab, f, layer=3, head=1)
    interp.head_frequency(lab, prompts)                     # how often each head is important
    interp.rejection(lab, trace)                            # why the first rejected draft token lost
    interp.skip_oracle(lab, trace)                          # which layers each token could have skipped
"""
from .flow import Flow, flow, flow_of
from .heads import HeadFrequency, head_frequency
from .lens import Effect, Lens, block_effect, head_effect, logit_lens, neuron_effect, token_rank
from .rejection import Rejection, first_rejection, rejection
from .routes import TAU, Edge, Route, extract
from .skip_oracle import SkipOracle, compare, skip_oracle

__all__ = ["Flow", "flow", "flow_of", "Route", "Edge", "extract", "TAU", "HeadFrequency", "head_frequency", "Lens",
           "Effect", "logit_lens", "token_rank", "head_effect", "block_effect", "neuron_effect", "Rejection",
           "rejection", "first_rejection", "SkipOracle", "skip_oracle", "compare"]
