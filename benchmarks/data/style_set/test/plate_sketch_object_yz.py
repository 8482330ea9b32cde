import cadquery as cq

s = cq.Sketch().rect(80, 80).push([(10, -5)]).rect(20, 30, mode="s")
result = cq.Workplane("YZ").placeSketch(s).extrude(10)
