import cadquery as cq
# a washer made by revolving its cross-section
washer = cq.Workplane("XZ").center(30, 0).rect(20, 6).revolve(360, (-30, 0, 0), (-30, 1, 0))
