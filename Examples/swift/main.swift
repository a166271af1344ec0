import SwiftQuant
print(SwiftQuantInfo.version)
