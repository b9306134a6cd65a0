"""gRPC servicers (thin: translate messages, call the domain) and the server assembly."""
