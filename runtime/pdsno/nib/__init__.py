"""The Network Information Base: each controller's state, behind one ``NIBStore`` protocol.

``store`` defines the protocol, ``sql`` implements it once for both backends (``sqlite``,
``postgres``), ``connect.open_nib`` opens one, ``migrations`` holds each backend's schema history.
"""
