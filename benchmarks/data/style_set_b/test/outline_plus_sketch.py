import cadquery as cq

result = cq.Workplane("XY").placeSketch(cq.Sketch().rect(100, 20).rect(20, 100)).extrude(8)
