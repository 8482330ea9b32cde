import cadquery as cq

result = cq.Workplane("ZX").center(40, -10).rect(60, 60).extrude(5)
