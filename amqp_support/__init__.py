"""The parts of the example that make txamqp 0.8.2 safe to use today.

common.py is what the scripts call; this package holds what it builds on:
codec.py reads and writes frames byte for byte, client.py is txamqp's
AMQClient with the fixes that a real broker and real messages need.
"""
