import cadquery as cq

result = cq.Workplane("XY").add(cq.Solid.makeBox(3, 2, 1))
