"""The retention strategy report behind `winback report`: scores + recommendations → segment matrix, actions,
budget curve, reasons and provenance (pure DataFrame functions), rendered as one self-contained HTML page."""
