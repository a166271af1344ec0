import CSwiftQuant
import SwiftQuant
