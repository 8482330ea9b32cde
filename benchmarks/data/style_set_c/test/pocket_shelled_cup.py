import cadquery as cq
cup = cq.Workplane("XY").box(30, 30, 30).faces(">Z").shell(-2)
