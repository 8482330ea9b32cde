import cadquery as cq

result = cq.Workplane("YZ").circle(50).extrude(40).faces(">X").workplane().circle(25).cutBlind(-10)
