"""A simulated data-center fleet that streams server status events into Kafka.

``fleet`` models the servers and their incidents, ``messages`` turns events into wire
bytes, ``faults`` corrupts a chosen share of them and keeps the run manifest,
``producer`` delivers records and ``cli`` wires it all to ``lakehouse simulate``.
"""
