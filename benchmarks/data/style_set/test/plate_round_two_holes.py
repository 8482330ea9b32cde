import cadquery as cq

disc = cq.Workplane("XY").circle(60).extrude(10)
result = disc.faces(">Z").workplane().pushPoints([(25, 0), (-25, 0)]).hole(16)
