import cadquery as cq
r = cq.Workplane("XZ").slot2D(60, 16).extrude(6).edges(">Y").chamfer(1)
